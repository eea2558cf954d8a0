"""Looking inside an SAE: top-activating contexts, the HTML feature browser, and steering."""
