"""``recordio-pack launch``: start GPU instances whose user-data mounts the dataset snapshot at boot."""

from __future__ import annotations

import argparse

from recordio_pack.commands import _common
from recordio_pack.commands.userdata import add_render_options, options_from_args
from recordio_pack.errors import UsageError

DESCRIPTION = """\
Start instances (run_instances) with the boot script of `recordio-pack userdata` as their user-data, an
instance profile that grants the script its AWS access (aws/policies/gpu-instance-boot.json), IMDSv2
required, and tags. Give --snapshot-id (and the script's options) to render the script here, or
--user-data-file with one rendered before. Prints the instance ids."""


_tag = _common.key_value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "launch", help="start instances that mount the dataset snapshot at boot",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: recordio-pack launch --snapshot-id snap-0123456789abcdef0 --image-id ami-0abc "
               "--instance-type g5.2xlarge --iam-instance-profile recordio-pack-gpu --count 4")
    group = parser.add_argument_group("instances")
    group.add_argument("--image-id", required=True, help="AMI (needs bash, curl and the AWS CLI)")
    group.add_argument("--instance-type", required=True, help="e.g. g5.2xlarge, p4d.24xlarge")
    group.add_argument("--iam-instance-profile", required=True, metavar="NAME_OR_ARN",
                       help="instance profile whose role allows aws/policies/gpu-instance-boot.json")
    group.add_argument("--count", type=_common.positive_int, default=1, help="how many instances (default 1)")
    group.add_argument("--key-name", help="EC2 key pair for SSH")
    group.add_argument("--subnet-id", help="subnet (it fixes the availability zone)")
    group.add_argument("--security-group-id", action="append", default=[], metavar="SG",
                       help="security group (repeatable)")
    group.add_argument("--name", default="recordio-pack-gpu", help="Name tag (default recordio-pack-gpu)")
    group.add_argument("--tag", action="append", type=_tag, default=[], metavar="KEY=VALUE",
                       help="extra instance tag (repeatable)")
    group.add_argument("--user-data-file", metavar="FILE",
                       help="user-data rendered before, instead of --snapshot-id and the script options")
    add_render_options(parser, snapshot_required=False, with_region=False)
    _common.add_aws_options(parser)
    _common.add_output_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from recordio_pack.aws.launch import LaunchOptions, launch_instances
    from recordio_pack.aws.session import AwsTarget
    from recordio_pack.userdata.render import render

    if bool(args.snapshot_id) == bool(args.user_data_file):
        raise UsageError("give either --snapshot-id (render the boot script here) or --user-data-file")
    if args.user_data_file:
        try:
            with open(args.user_data_file, encoding="utf-8") as handle:
                user_data = handle.read()
        except OSError as error:
            raise UsageError(f"cannot read --user-data-file: {error}") from error
        except UnicodeDecodeError as error:
            raise UsageError(f"--user-data-file {args.user_data_file} is not UTF-8 text ({error.reason} at byte "
                             f"{error.start}); EC2 user-data is a script or cloud-config document") from None
    else:
        user_data = render(options_from_args(args), args.format)
    options = LaunchOptions(
        image_id=args.image_id, instance_type=args.instance_type, user_data=user_data,
        iam_instance_profile=args.iam_instance_profile, count=args.count, key_name=args.key_name,
        subnet_id=args.subnet_id, security_group_ids=tuple(args.security_group_id), name=args.name,
        snapshot_id=args.snapshot_id, tags=tuple(args.tag))
    result = launch_instances(AwsTarget.from_args(args), options)
    _common.emit(args, result.as_dict(), "\n".join(result.instance_ids))
    return 0
