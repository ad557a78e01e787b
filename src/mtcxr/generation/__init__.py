"""Report generation by retrieval, and its scoring (NLG metrics, clinical efficacy)."""
