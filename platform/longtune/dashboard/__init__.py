"""The web dashboard: server-rendered pages for people, on the same services as the REST API.

One business rule, two doors: every page calls the service the API view calls (never the API
over HTTP), and the org is resolved once per request through the session door
(``tenancy.authentication.session_membership`` + ``attach_principal``), so ``request.org`` and
``request.role`` mean the same here as in the API.
"""
