#!/bin/bash
# dracut module "pyinit": pyinit as the image's /init.   dracut --add pyinit ...
#
# dracut still collects the kernel modules (host-only or not, --drivers, --add-drivers) and
# whatever its other modules install; pyinit-mkinitramfs adds the Python interpreter, pyinit
# and its hooks, and replaces /init. pyinit loads every module dracut put in the image
# (dependencies first, from the image's modules.dep) and does not use udev or dracut's
# shell hooks: use pyinit's hooks (pyinit_hooks) for LUKS, LVM, RAID, network roots.
#
# Settings, in dracut.conf(.d) or the environment:
#   pyinit_mkinitramfs="pyinit-mkinitramfs"    the builder command (PYINIT_MKINITRAMFS)
#   pyinit_hooks="luks lvm"                    pyinit hooks to add (PYINIT_HOOKS)
#   pyinit_python=/usr/bin/python3.11          the interpreter to pack (PYINIT_PYTHON)

check() {
    # Only when asked for: dracut --add pyinit, or add_dracutmodules+=" pyinit ".
    return 255
}

depends() {
    return 0
}

_pyinit_cmd() {
    echo "${pyinit_mkinitramfs:-${PYINIT_MKINITRAMFS:-pyinit-mkinitramfs}}"
}

_pyinit_hook_args() {
    local h
    for h in ${pyinit_hooks:-${PYINIT_HOOKS:-}}; do
        printf -- '--hook\n%s\n' "$h"
    done
}

installkernel() {
    local -a hooks
    mapfile -t hooks < <(_pyinit_hook_args)
    local mods
    # shellcheck disable=SC2046
    mods=$($(_pyinit_cmd) dracut-install --print-modules "${hooks[@]}") || return 1
    [[ $mods ]] && hostonly='' instmods $mods
    return 0
}

install() {
    local -a args hooks
    mapfile -t hooks < <(_pyinit_hook_args)
    args=(dracut-install --initdir "$initdir" --kver "$kernel" "${hooks[@]}")
    local python="${pyinit_python:-${PYINIT_PYTHON:-}}"
    [[ $python ]] && args+=(--python "$python")
    # shellcheck disable=SC2046
    if ! $(_pyinit_cmd) "${args[@]}"; then
        dfatal "pyinit: $(_pyinit_cmd) ${args[*]} failed"
        return 1
    fi
}
