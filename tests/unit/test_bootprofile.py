"""bench --profile's pure parts: the console, sampler and strace parsers, and the test-only
image variants (a cpio appended after the image, as the kernel concatenates them)."""
import pytest

from devtools import bootprofile as bp
from mkinitramfs import archive, compress, cpio
from mkinitramfs.image import Image

pytestmark = pytest.mark.unit

CONSOLE = """[    1.881333] Trying to unpack rootfs image as initramfs...
[    2.535906] Freeing initrd memory: 5572K
[    4.459142] Run /init as init process
import time: self [us] | cumulative | imported package
import time:       132 |        132 |   _io
import time:      6547 |      22102 | encodings
[    5.013058] pyinit: pyinit started at 4.864 s; command line: console=ttyS0 root=/dev/vda
[    5.498610] pyinit: loaded 12 of 12 modules
[    5.570336] pyinit: found root device /dev/vda: /dev/vda (254:0) TYPE="ext4"
[    5.713834] pyinit: mounted /dev/vda on /sysroot as ext4, read-only
[    5.719355] pyinit: switching root to /sysroot (/dev/vda), then exec /sbin/init
REALINIT: uptime 5.79
"""


def test_console_milestones_and_importtime():
    c = bp.parse_console(CONSOLE)
    assert c["unpack_start"] == 1.881333 and c["unpack_end"] == 2.535906 and c["run_init"] == 4.459142
    assert c["pyinit_started"] == 4.864 and c["modules_loaded"] == 5.498610 and c["real_init"] == 5.79
    assert c["imports"] == [{"module": "_io", "self_us": 132, "cumulative_us": 132, "depth": 1},
                            {"module": "encodings", "self_us": 6547, "cumulative_us": 22102, "depth": 0}]
    assert bp.parse_console("")["run_init"] is None


def test_sampled_dump_and_strace_counts():
    s = bp.parse_sampled("PROFILE-START 4.35\nPROFILE-MAIN 4.40\nPROFILE-END 5.2 why\nPROFILE-IDLE 0.8 0.09\n"
                         "PROFILE-COUNT 3 import\nPROFILE-STACK 0.25 init:<module>;kmod.py:load;line 9\n"
                         "PROFILE-STACK 0.05 init:<module>;kmod.py:load;line 9\n")
    assert s["start"] == 4.35 and s["main"] == 4.40 and s["idle"] == {"span": 0.8, "idle": 0.09}
    assert s["counts"] == {"import": 3} and s["stacks"] == {"init:<module>;kmod.py:load;line 9": pytest.approx(0.3)}
    t = bp.parse_strace('1     openat(AT_FDCWD, "/usr/lib/x.pyc", O_RDONLY) = 3\n'
                        '185   openat(AT_FDCWD, "/lib/tls/libc.so.6", O_RDONLY) = -1 ENOENT (No such file)\n'
                        '1     close(3)                          = 0\n')
    assert t["calls"] == {"openat": 2, "close": 1} and t["opens"] == {"/usr/lib": 1}
    assert t["failed"] == {"openat /lib/tls": 1}


def _image() -> bytes:
    img = Image()
    init = b"#!/usr/bin/python3.11 -IS\n# c\nfrom pyinit.__main__ import main\nmain()\n"
    img.add_file("/init", data=init, mode=0o755)
    return compress.compress(cpio.write(img), "zstd")


@pytest.mark.parametrize("variant", ["importtime", "sampled", "bare"])
def test_variants_append_a_segment_whose_init_replaces_the_images(variant):
    raw = _image()
    data, append = bp.variant_image(raw, variant)
    assert data.startswith(raw)
    segments = archive.read_image(data)
    assert len(segments) == 2
    files = {m.name: m.data for m in segments[1].members}
    if variant == "bare":
        assert append.startswith("panic=-1 rdinit=/usr/bin/python3.11 -- -IS ") and "profile-bare.py" in files
        return
    init = files["init"].decode()
    assert append == "" and "from pyinit.__main__ import main" in init
    first = init.splitlines()[0]
    assert first == ("#!/usr/bin/python3.11 -ISXimporttime" if variant == "importtime" else "#!/usr/bin/python3.11 -IS")
    if variant == "sampled":
        compile(init, "init", "exec")  # the profiler script is valid Python
        assert init.rstrip().endswith("main()") and any(m.name == "dev/ttyS1" for m in segments[1].members)
