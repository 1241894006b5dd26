"""drf-spectacular: describe ApiKeyAuthentication as an HTTP bearer scheme."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "longtune.tenancy.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "lt_ followed by 48 letters/digits",
            "description": "An organization API key: `Authorization: Bearer lt_...`.",
        }
