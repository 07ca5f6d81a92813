module sigvictim

go 1.19
