# Adds COUNT users named PREFIX00000... under OU straight into the DC's database. Run as root on
# the DC host, with Samba's Python bindings. The users have no password, so they are disabled.
#
# Each add is its own transaction, written without fsync: inside a larger transaction every add
# copies the transaction's cached index lists, which grow with it, so a few hundred adds per
# transaction were slower, not faster (measured: 2.5 times the CPU per add at 10,000 users). An
# add still costs more as the domain grows, as every add rewrites the indexes of values all users
# share (their object classes).
import sys

import ldb
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB

smb_conf, ou, prefix, count, domain = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
parameters = LoadParm()
parameters.load(smb_conf)
samdb = SamDB(
    url=parameters.samdb_url(),
    session_info=system_session(),
    lp=parameters,
    flags=ldb.FLG_NOSYNC,
)
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
