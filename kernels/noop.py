"""Tasks that do nothing, for measuring pure dispatch cost."""


def none(x: object = None) -> None:
    """Return None at once: the cheapest possible task."""
    return None
