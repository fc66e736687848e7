"""Networks: activations, layers on one protocol, the sequential model and losses."""
