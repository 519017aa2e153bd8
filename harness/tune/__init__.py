"""Running a plan on Ray Tune: the Ray session, the runner, the Optuna search and the trainable."""
