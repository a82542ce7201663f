mod methods;
