"""Training (train.py): settings (config), one step (step), episodes for the loop (data), the epoch
loop (loop), run state across interruptions (state), files people read (outputs), set-up (run),
torchrun support (distributed) and the run folder's safety (run_folder)."""
