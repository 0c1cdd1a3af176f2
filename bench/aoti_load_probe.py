"""Which AOTInductor package form loads on this GPU? A two-layer module exported, packaged with and without its
weights in the .so, loaded in a fresh child process each (a segfault there only ends that child)."""
import subprocess
import sys
import tempfile

CHILD = r'''
import sys, torch
mode = sys.argv[1]; path = sys.argv[2]
m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).cuda().half().eval()
x = torch.randn(4, 64, device="cuda", dtype=torch.half)
ep = torch.export.export(m, (x,))
cfg = {} if mode == "in_so" else {"aot_inductor.package_constants_in_so": False}
if mode == "on_disk":
    cfg["aot_inductor.package_constants_on_disk_format"] = "pickle_weights"
torch._inductor.aoti_compile_and_package(ep, package_path=path, inductor_configs=cfg)
print(mode, "built", flush=True)
r = torch._inductor.aoti_load_package(path)
print(mode, "loaded", flush=True)
if mode != "in_so":
    state = dict(m.state_dict())
    r.load_constants({k: state[k] for k in r.get_constant_fqns()}, check_full_update=True, user_managed=True)
    print(mode, "constants", flush=True)
y = r(x)
print(mode, "ran, max |diff|", float((y - m(x)).abs().max()), flush=True)
'''
for mode in ("in_so", "not_in_so", "on_disk"):
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([sys.executable, "-c", CHILD, mode, f"{d}/m.pt2"], capture_output=True, text=True)
        lines = [ln for ln in p.stdout.splitlines()] + [ln for ln in p.stderr.splitlines() if "Error" in ln][-3:]
        print(f"{mode}: exit {p.returncode}: " + " | ".join(lines), flush=True)
