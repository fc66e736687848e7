"""Integer arithmetic with C semantics, the overflow policy, the run context and exact products.

Nothing here knows about layers or training: these are the operations every layer, learning
rule and engine is built from.
"""
