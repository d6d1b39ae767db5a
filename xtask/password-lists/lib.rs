//! Empty: this package only names the crates whose password lists the built-in filter is made of.
