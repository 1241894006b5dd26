"""Tenancy: organizations, users, memberships and roles, API keys, invitations, quotas, audit log."""
