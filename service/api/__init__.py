"""HTTP layer: routes only parse requests and shape answers."""
