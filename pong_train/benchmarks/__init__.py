"""`pong-train bench`'s measurements, apart from the training code they measure: speed side by side with stock
RLlib (`speed`) and learning per agent step and per minute (`learning`)."""
