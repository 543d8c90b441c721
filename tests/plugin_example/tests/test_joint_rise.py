"""The plugin's own tests, with the fixtures busguard ships (pytest11: busguard.testing)."""

SITE = """
[site]
name = "joint-test"
[[probe]]
name = "joint-a3"
driver = "memory"
points = ["temp_c"]
[[probe]]
name = "run-a"
driver = "memory"
points = ["temp_c"]
[[block]]
name = "a3-rise"
type = "joint_rise"
joint = "joint-a3"
reference = "run-a"
max_rise_c = 15.0
"""


def test_alarm_on_rise_and_clear_with_hysteresis(make_runtime, run_scans):
    rt = make_runtime(SITE)
    temps = [(50, 40), (56, 40), (54, 40), (52, 40)]  # rise 10, 16, 14, 12

    def drive(rt, i):
        joint, ref = temps[i]
        rt.image.write("joint-a3.temp_c", joint)
        rt.image.write("run-a.temp_c", ref)

    results = run_scans(rt, len(temps), between=drive)
    edges = [(e.kind, e.alarm.condition.code) for r in results for e in r.edges]
    assert edges == [("raised", "EX-JOINT-RISE"), ("cleared", "EX-JOINT-RISE")]
