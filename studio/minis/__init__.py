"""The built-in mini models' world: scenes drawn from words, and a detector that reads pictures back
(scenes.py). The models are trained on it by tools/train_mini_lumina.py and shipped in weights/."""
