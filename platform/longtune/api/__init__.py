"""Shared REST pieces every /v1/ app builds on: public ids, errors, pagination, base viewset."""
