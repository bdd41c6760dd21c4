"""The worker: the process that owns the model, the session and the store (`server`), the
protocol it speaks, the app's end of it (`client`), and training as a child process (`jobs`).

Importing this package (or `protocol`, `client`, `jobs`) does not import torch: only `server` does."""
