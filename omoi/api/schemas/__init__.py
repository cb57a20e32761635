"""marshmallow schemas: the API's contract, one module per blueprint (``common`` holds what
they share). Unknown fields are rejected (RAISE), which the OpenAPI document states as
``additionalProperties: false``."""
