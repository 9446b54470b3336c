"""Helpers the tests share, so that no test module imports another.

A helper used by tests of more than one module lives here, in the module of its subject;
a helper used by one test module stays in that module. Fixtures stay in the conftest.py
files (pytest finds them there); what a fixture and a test both need (the list of kernel
series, the builder's command) is here, and the conftest imports it.

- builder.py: the checkout (REPO), the builder run as users run it, each series' base modules
- boots.py: the kernel series the VM tier boots, and what "pyinit handed over" means from outside
- hosttools.py: the host's tools (mkfs, blkid, partx, losetup...) that fail the test naming
  their Debian package, and util-linux's blkid as the reference for pyinit's probes
- fakesys.py: /sys and /dev made of plain files, fed by uevents
- disks.py: disk images made byte by byte (GPT headers, md superblocks) for hostile inputs
- hooks.py: a shipped hook loaded by path as pyinit loads it, and a hook runner on a folder
- kernel_cmdline_model.py: an independent model of the kernel's command-line tokenizer
- udev_names.py: the six disks of tests/vm/test_disks.py and the names udev gives them
- codeshape.py: the packages' import graph (function-level imports too) and function lengths
"""
