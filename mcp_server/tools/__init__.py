"""The six tools, one module per capability: each a plain function (caller, **arguments) -> its output model."""
