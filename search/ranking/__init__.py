"""Multi-objective reranking: relevance, freshness (age decay) and diversity (MMR)."""
