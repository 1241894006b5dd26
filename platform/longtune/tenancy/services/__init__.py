"""Tenancy business rules, callable from views, the admin and management commands alike.

Each function validates its rules, changes the rows in one transaction and writes the audit log.
Rule violations raise ``api.errors.ApiError`` with a machine-readable code.
"""
