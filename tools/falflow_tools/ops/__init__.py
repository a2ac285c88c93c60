"""The operator commands' domain: small functions over a `Target`; the click layer stays thin."""
