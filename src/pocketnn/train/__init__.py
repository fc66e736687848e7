"""Training: learning rules (DFA, BP), the integer optimizer, the trainer loop."""
