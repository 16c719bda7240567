"""Device-to-device copy bandwidth: the memory ceiling the bit-path kernels are held to.

    python -m bench.copy_bandwidth OUT.json      (needs CUDA)

Bytes moved count both the read and the write; best and mean of 20 event-timed copies
of 1 GiB after 3 warm-ups.
"""
import json
import sys

import torch


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not torch.cuda.is_available():
        sys.exit("bench.copy_bandwidth needs a CUDA GPU")
    nbytes = 1 << 30
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(20):
        start.record(); dst.copy_(src); end.record(); end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    best = min(times)
    res = dict(device=torch.cuda.get_device_name(), bytes_copied=nbytes, bytes_moved=2 * nbytes,
               best_s=best, mean_s=sum(times) / len(times),
               GBps_best=2 * nbytes / best / 1e9, GBps_mean=2 * nbytes * len(times) / sum(times) / 1e9)
    if argv:
        with open(argv[0], "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
