"""Compare SAEs on what they are used for, beyond FVU and L0 (`sae-lab bench`).

One module per task: core.py (reconstruction, dead and dense latents, CE/KL), probing.py
(k-sparse probes on labelled text; the sets in textsets.py), absorption.py (the first-letter
task), autointerp.py (explain's detection score); run.py runs them on several SAEs and writes
the table and the plots.
"""
