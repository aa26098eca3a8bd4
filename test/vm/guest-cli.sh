# CLI checks of the ublk VM test, sourced by guest-init.sh (busybox sh) with
# ok/bad/check defined and /data/env loaded.

# attach LOG ARGS...: starts `obdfs ublk attach ARGS` in the background (PID in
# $apid) and waits up to 120 s for it to print the device path.
attach() {
  log=$1; shift
  obdfs ublk attach "$@" >"$log.out" 2>"$log.err" &
  apid=$!
  i=0
  while [ $i -lt 1200 ]; do
    if grep -q '^/dev/ublkb' "$log.out" 2>/dev/null; then
      dev=$(grep '^/dev/ublkb' "$log.out" | head -1)
      return 0
    fi
    kill -0 $apid 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
  done
  echo "attach $*: no device; stderr:"; cat "$log.err"
  return 1
}

# detach N: `obdfs ublk detach N`, then the server must exit 0.
detach() {
  obdfs ublk detach "$1" || return 1
  wait $apid || { echo "server exit $?; stderr:"; cat "$log.err"; return 1; }
}

gone() { [ ! -e /dev/ublkb$1 ] && [ ! -e /dev/ublkc$1 ] && [ ! -e /sys/class/ublk-char/ublkc$1 ]; }
shaof() { sha256sum "$1" | cut -d' ' -f1; }

# A. Read-only compressed 3-layer stack: whole-device digest = obdfs cat's.
if attach /tmp/a --id 0 "$STACK_RO"; then
  ok "attach compressed stack prints $dev"
  check "device of a read-only stack is read-only" [ "$(cat /sys/block/ublkb0/ro)" = 1 ]
  check "sha256 of /dev/ublkb0 = obdfs cat" [ "$(shaof /dev/ublkb0)" = "$SHA_RO" ]
  check "O_DIRECT read sha256 = obdfs cat" [ "$(dd if=/dev/ublkb0 bs=256k iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$SHA_RO" ]
  obdfs ublk ls
  check "ublk ls lists device 0 live" sh -c 'obdfs ublk ls | grep -q "^/dev/ublkb0 *live"'
  check "detach 0, server exits 0" detach 0
  check "no device left after detach" gone 0
else
  bad "attach compressed stack"
fi

# B. Writable stack: O_DIRECT writes survive SIGTERM and a re-attach.
if attach /tmp/b --id 1 "$STACK_RW"; then
  check "O_DIRECT write to writable stack" dd if=/data/pattern.bin of=/dev/ublkb1 bs=64k seek=17 oflag=direct conv=notrunc
  kill -TERM $apid
  check "SIGTERM: server exits 0" wait $apid
  check "no device left after SIGTERM" gone 1
  if attach /tmp/b2 --id 1 "$STACK_RW"; then
    dd if=/dev/ublkb1 of=/tmp/back.bin bs=64k skip=17 count=16 iflag=direct 2>/dev/null
    check "written data back after re-attach" cmp /tmp/back.bin /data/pattern.bin
    check "whole writable device sha256" [ "$(shaof /dev/ublkb1)" = "$SHA_RW" ]
    # DISCARD (blkdiscard) must make the range read as zeros.
    check "blkdiscard 1 MiB at 1 MiB" blkdiscard -o 1048576 -l 1048576 /dev/ublkb1
    dd if=/dev/zero of=/tmp/zero.bin bs=64k count=16 2>/dev/null
    dd if=/dev/ublkb1 of=/tmp/disc.bin bs=64k skip=16 count=16 iflag=direct 2>/dev/null
    check "discarded range reads as zeros" cmp /tmp/disc.bin /tmp/zero.bin
    check "detach 1" detach 1
  else
    bad "re-attach writable stack"
  fi
else
  bad "attach writable stack"
fi

# C. ext4 on a compressed layer + writable upper.
if attach /tmp/c "$STACK_EXT4"; then
  n=${dev#/dev/ublkb}
  if mount -t ext4 "$dev" /mnt; then
    ok "mount ext4 on $dev"
    check "ext4 files are right" sh -c 'cd /mnt && sha256sum -c -s /data/ext4.sha256'
    cp /data/pattern.bin /mnt/new.bin && sync
    check "umount" umount /mnt
  else
    bad "mount ext4 on $dev"; dmesg | tail -5
  fi
  check "detach ext4 device" detach $n
  if attach /tmp/c2 --id $n "$STACK_EXT4"; then
    if mount -t ext4 "$dev" /mnt; then
      check "file written through ext4 survives re-attach" cmp /mnt/new.bin /data/pattern.bin
      check "old ext4 files still right" sh -c 'cd /mnt && sha256sum -c -s /data/ext4.sha256'
      umount /mnt
    else
      bad "re-mount ext4"
    fi
    check "detach ext4 device again" detach $n
    check "no ext4 device left" gone $n
  else
    bad "re-attach ext4 stack"
  fi
else
  bad "attach ext4 stack"
fi

# D. Recovery: kill -9 the server, read meanwhile, take over with --recover.
if attach /tmp/d --id 3 "$STACK_RO"; then
  kill -KILL $apid; wait $apid 2>/dev/null
  check "block device stays after the server is killed" [ -b /dev/ublkb3 ]
  (dd if=/dev/ublkb3 bs=1M skip=8 count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1 >/tmp/rec.sha) &
  rpid=$!
  sleep 1
  check "read waits while no server" kill -0 $rpid
  if attach /tmp/d2 --recover 3 "$STACK_RO"; then
    ok "attach --recover 3"
    wait $rpid
    check "read issued before recovery completes right" [ "$(cat /tmp/rec.sha)" = "$SHA_REC" ]
    check "sha256 after recovery" [ "$(shaof /dev/ublkb3)" = "$SHA_RO" ]
    check "detach recovered device" detach 3
  else
    bad "attach --recover 3"
    obdfs ublk detach 3
  fi
  check "no device left after recovery test" gone 3
else
  bad "attach for recovery"
fi

# E. Server killed without recovery: the block device goes (6.12 at once,
# 6.1-6.6 from their 5 s monitor), /dev/ublkcN stays until a detach from
# another process deletes it.
if attach /tmp/e --id 4 --no-recovery "$STACK_RO"; then
  kill -KILL $apid; wait $apid 2>/dev/null
  check "detach of a device whose server was killed" obdfs ublk detach 4
  check "no device left after detaching a dead server" gone 4
else
  bad "attach --no-recovery"
fi

# F. SIGTERM while the device is being created (as soon as ADD_DEV made
# /dev/ublkc5): the server finishes or undoes the creation, then exits 0.
obdfs ublk attach --id 5 "$STACK_RO" >/tmp/f.out 2>/tmp/f.err &
apid=$!
i=0
while [ ! -e /sys/class/ublk-char/ublkc5 ] && kill -0 $apid 2>/dev/null && [ $i -lt 200000 ]; do i=$((i + 1)); done
kill -TERM $apid
if wait $apid; then ok "SIGTERM during creation: server exits 0"; else bad "SIGTERM during creation: server exit $?"; cat /tmp/f.err; fi
check "no device left after SIGTERM during creation" gone 5

# G. Failure paths leave nothing behind.
check "attach of a missing stack fails" sh -c '! obdfs ublk attach /data/missing.lsmt'
check "no ublk devices left at all" sh -c '[ -z "$(ls /sys/class/ublk-char/ 2>/dev/null)" ]'
