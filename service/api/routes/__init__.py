"""HTTP routes. Each module's router carries its full path prefix, so ``route.path`` is the whole template
(``/v1/users/{user_id}``) that metrics and logs label by."""

API_PREFIX = "/v1"
