"""One router per resource: search, documents, admin, ops."""
