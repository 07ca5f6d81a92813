module allocsite

go 1.19
