# Lets the service account list and read CN=Deleted Objects, so that directory sync sees
# deletions (tombstones) through the show-deleted control. This is the step an administrator takes
# with `dsacls "CN=Deleted Objects,DC=..." /takeownership` and `/G DOMAIN\svc-writeback:LCRP`.
# Run by the test harness as root on the DC host, with Samba's Python bindings.
import sys

import ldb
from samba.auth import system_session
from samba.dcerpc import security
from samba.ndr import ndr_pack, ndr_unpack
from samba.param import LoadParm
from samba.samdb import SamDB

smb_conf, sid = sys.argv[1], sys.argv[2]
parameters = LoadParm()
parameters.load(smb_conf)
samdb = SamDB(url=parameters.samdb_url(), session_info=system_session(), lp=parameters)
dn = "CN=Deleted Objects," + str(samdb.get_default_basedn())
controls = ["show_deleted:1", "sd_flags:1:4"]
found = samdb.search(dn, scope=ldb.SCOPE_BASE, attrs=["nTSecurityDescriptor"], controls=controls)
descriptor = ndr_unpack(security.descriptor, found[0]["nTSecurityDescriptor"][0])
ace = security.descriptor.from_sddl("D:(A;;LCRP;;;%s)" % sid, security.dom_sid(sid)).dacl.aces[0]
descriptor.dacl_add(ace)
message = ldb.Message()
message.dn = ldb.Dn(samdb, dn)
message["nTSecurityDescriptor"] = ldb.MessageElement(
    ndr_pack(descriptor), ldb.FLAG_MOD_REPLACE, "nTSecurityDescriptor"
)
samdb.modify(message, controls=controls)
