"""HTTP views of the tenancy endpoints (thin: validate, call services, serialize)."""
