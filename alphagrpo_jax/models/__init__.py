"""Model families. Only BAGEL for now."""
