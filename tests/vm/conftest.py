"""tests/vm: the host-side test boots the guest; tests/vm/guest/ is the suite that runs inside it.

The guest suite needs a pure cgroup v2 host, so it is collected only where the harness asks for it
(CORERT_VM_GUEST=1, set in the guest's environment by test_cgroup_v2_in_vm.py).
"""
import os

collect_ignore = ["harness.py"] + ([] if os.environ.get("CORERT_VM_GUEST") == "1" else ["guest"])
