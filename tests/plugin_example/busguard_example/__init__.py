"""busguard-example-blocks: registers its block types with busguard."""

from busguard import hookimpl
from busguard_example.joint_rise import JointRise


@hookimpl
def busguard_register_types(registry):
    registry.add_block(JointRise)
