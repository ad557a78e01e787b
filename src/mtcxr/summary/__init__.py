"""Summary: the cross-run tables, the figures and the HTML front page."""
