"""Dynamic-weight matching: query features, the learned weight model, and its fitting."""
