"""Pictures of a trained run, as the paper shows them: conv1's filters (Fig. 3), predictions and
fc7 nearest neighbours (Fig. 4), and the training curves."""
