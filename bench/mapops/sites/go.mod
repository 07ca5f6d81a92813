module sites

go 1.19
