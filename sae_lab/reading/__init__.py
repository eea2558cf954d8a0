"""Reading an SAE: top-activating contexts, the feature browser and live viewer, features of a
text, steering, explanations by an LLM, and probes."""
