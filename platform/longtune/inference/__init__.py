"""Inference: endpoints (deployments of a base or fine-tuned model), their replicas, the
OpenAI-compatible gateway (/v1/chat/completions, /v1/completions) and the usage ledger."""
