# Adds COUNT users named PREFIX00000... under OU straight into the DC's database, in one
# transaction: thousands per second, where LDAP adds manage a few hundred. Run as root on the DC
# host, with Samba's Python bindings. The users have no password, so they are disabled.
import sys

from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

smb_conf, ou, prefix, count, domain = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
parameters = LoadParm()
parameters.load(smb_conf)
samdb = SamDB(url=parameters.samdb_url(), session_info=system_session(), lp=parameters)
samdb.transaction_start()
try:
    for index in range(count):
        name = "%s%05d" % (prefix, index)
        samdb.add({
            "dn": "CN=%s,%s" % (name, ou),
            "objectClass": "user",
            "sAMAccountName": name,
            "userPrincipalName": "%s@%s" % (name, domain),
            "givenName": "Bulk",
            "sn": name,
            "displayName": "Bulk user %s" % name,
            "mail": "%s@mail.%s" % (name, domain),
        })
except BaseException:
    samdb.transaction_cancel()
    raise
samdb.transaction_commit()
