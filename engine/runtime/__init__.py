"""Where and how the stages run: the stages themselves (networks, tiles, pixels),
the scheduler (buckets, chunks, windows, input order), the executors (inline or CUDA
streams) and the entropy pools (inline, threads, processes).  Above the format wing
and the runners, below the Codec."""
