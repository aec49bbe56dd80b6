"""The pipeline: spec -> plan -> artifacts -> render -> checks -> atomic write."""
