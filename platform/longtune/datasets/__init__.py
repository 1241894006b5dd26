"""Datasets: formats, streaming validation, PII scrubbing, token stats, recipes.

The modules named here are pure Python (no Django, no torch) so the CPU Celery
task, the API and the training worker can all call them. Public entry points:

- validation.validate_and_scrub(src, dst, policy, limits, *, scrub, count_tokens) -> ProcessingReport
- pii.PiiScrubber(policy).scrub_line(bytes) / .scrub_text(str) / .detect(str); pii.PiiPolicy
- tokens.TokenStats (estimated_training_tokens, packed_sequences)
- recipes.run_recipe(recipe, num_examples, count_tokens) -> (iterator, RecipeReport)
- errors.ERROR_CODES (documented in docs/dataset-errors.md)
"""
