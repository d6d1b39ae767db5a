# Adds COUNT users named PREFIX00000... under OU straight into the DC's database, a few hundred
# per transaction: several hundred a second, where LDAP adds manage far fewer. (One transaction for
# everything slows down as it grows.) Run as root on the DC host, with Samba's Python bindings. The
# users have no password, so they are disabled.
import sys

from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

smb_conf, ou, prefix, count, domain = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
parameters = LoadParm()
parameters.load(smb_conf)
samdb = SamDB(url=parameters.samdb_url(), session_info=system_session(), lp=parameters)
CHUNK = 500
samdb.transaction_start()
try:
    for index in range(count):
        if index and index % CHUNK == 0:
            samdb.transaction_commit()
            samdb.transaction_start()
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
