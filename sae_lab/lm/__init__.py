"""The language model side: loading a model, its hook points, editing activations in its forward
pass, and attaching an SAE to the point it was trained on."""
