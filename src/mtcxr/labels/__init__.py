"""Labels: the CheXpert-observation labeler (vocabulary, engine, regex subset) and the label-extraction stage."""
