"""The task of the kill-and-resume trials: sleep a little, note the finish, return 2 x i.

Each finish is appended to the file named by MTCMPI_FAULTS_LOG (one short line, O_APPEND, so
concurrent ranks do not interleave), which lets the trials count how often each task ran.
"""
import os
import random
import time


def work(i: int) -> int:
    time.sleep(random.Random(i).uniform(0.005, 0.04))
    with open(os.environ["MTCMPI_FAULTS_LOG"], "a") as f:
        f.write(f"{i} {os.getpid()} {time.time():.6f}\n")
    return 2 * i
