"""A Python hook: run(context) in PID 1's own interpreter."""
import os
import time


def run(context):
    stage = context.stage
    os.write(1, (f"STAGEHOOK: py {stage} newroot={context.newroot} root={context.root} "
                 f"device={context.root_device or '-'} pid={os.getpid()}\n").encode())
    if context.cmdline.get("pyinit.test.hang") == stage:
        os.write(1, f"STAGEHOOK: py {stage} hangs\n".encode())
        time.sleep(10000)
    if context.cmdline.get("pyinit.test.fail") == stage:
        raise RuntimeError(f"asked to fail at {stage}")
