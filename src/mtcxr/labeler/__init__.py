"""The report labeler: `vocabulary` (terms and cues), `engine` (reading reports with them) and
`regex_subset` (the shortest match and first characters of a term regex, which the engine needs).
`mtcxr.labels` is the stage around it (files, agreement with a dataset's labels)."""
