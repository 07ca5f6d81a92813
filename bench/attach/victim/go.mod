module victim

go 1.19
